"""Built-in kernel families; importing this package registers them."""

from kptune.families import conv2d as conv2d

__all__ = ["conv2d"]
