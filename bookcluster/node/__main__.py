from bookcluster.node.main import main

main()
