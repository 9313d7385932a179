"""civicsync on Kafka: the local broker and Connect, Debezium decoding, civicsync's envelope, topics."""
