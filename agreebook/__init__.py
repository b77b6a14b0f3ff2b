"""agreebook: do neural networks learn examples in the same order? (Hacohen, Choshen, Weinshall 2020)."""
__version__ = "0.1.0"
