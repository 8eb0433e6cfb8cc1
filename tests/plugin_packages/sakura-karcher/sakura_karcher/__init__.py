"""A native Karcher mean for sakura (the tests install it with pip): the implementation is in ``method``."""
