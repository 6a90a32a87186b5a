from region_node.main import main

main()
