"""Data shipped with stackcheck: the image catalog and Dockerfiles (``images/``) and the reference stacks."""
