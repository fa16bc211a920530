from gamecast.cli import main

main()
