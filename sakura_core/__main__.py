from sakura_core.cli import main

main()
