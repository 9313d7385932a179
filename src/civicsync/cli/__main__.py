from civicsync.cli.app import main

main()
