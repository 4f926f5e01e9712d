"""Bridges to other frameworks. Each module imports its framework on import and is imported only when asked for
(``custom_imports`` in an mmseg config imports :mod:`zoo.integrations.mmseg`); ``import zoo`` imports none of them."""
