"""A reward function that always raises (a bug, a missing resource): every group fails, none is trained."""


def broken(inp, options):
    raise ValueError("reward function broken")
