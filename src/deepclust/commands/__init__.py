"""One module per CLI sub-command (``deepclust <name>``), listed in `deepclust.cli.COMMANDS`.

Each module provides ``register(subparsers)``, which adds its parser (a description that
says what the command writes, and an epilog with an ``Example:``) and sets ``run`` with
``set_defaults(run=run)``, and ``run(args) -> int`` (the exit code). Commands stay thin:
they parse, call the library (e.g. `deepclust.pipeline.cluster_source`) and print; bad
input is raised as `deepclust.errors.DeepclustError`, which the CLI turns into exit code 2.
Heavy imports (torch, faiss) happen inside ``run`` so that ``deepclust --help`` is fast.
"""
