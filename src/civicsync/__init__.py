"""civicsync: keeps the welfare programme's warehouse and citizen portal databases in step."""

__version__ = "0.1.0"
