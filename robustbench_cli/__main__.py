from robustbench_cli.cli import main

main()
