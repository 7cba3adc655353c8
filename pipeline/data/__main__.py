from pipeline.data.dataset import main

main()
