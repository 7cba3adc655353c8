from pipeline.score.cli import main

main()
