"""The options of a run as typed, frozen sections built once from one declarative table (see :mod:`.table`)."""
