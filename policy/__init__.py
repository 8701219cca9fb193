"""Product: the Pulumi policy pack (`pulumi up --policy-pack policy`): what no stack may declare, checked by the engine.

Owns: the mandatory policies. May import: nothing else of ours (the engine loads the pack in its own process).
"""

MAY_IMPORT: tuple[str, ...] = ()
