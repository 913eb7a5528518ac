"""Desktop tools: synthetic scenes, demo model builders, the bundle writer.

Never imported by ``runtime/``.
"""
