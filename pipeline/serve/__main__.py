from pipeline.core.errors import cli_entry


@cli_entry
def run() -> None:
    from pipeline.serve.cli import main  # imported here: Ctrl-C while torch and transformers load is one line too

    main()


run()
