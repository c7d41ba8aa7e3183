"""The built-in agent kinds, found by name through `synthgrad.agents.registry`.

`layers` (`dense`, `conv`, `head`) over `modules` (their torch modules), `source` (image
sets), `sequence_source` (`copy_task`, `text`), `recurrent` (`rnn`) and `timescale` (the
two-timescale system: `digit_stream`, `fast_counter`, `slow_counter`).  A kind uses only the
public plug-in API (`synthgrad.agents`) and the runtime's public names.
"""
