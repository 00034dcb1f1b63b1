"""Chat formats: prompt renderers and output parsers. Pure functions and state machines, no I/O."""
