"""Database plumbing shared by every stage: connections, error mapping, migrations."""
