from bookcluster.cli import main

main()
