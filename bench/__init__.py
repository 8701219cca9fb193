"""`make bench`: the serving benchmark and its report. May import: serving (what is measured) and training (the
local registry it trains its model into).
"""

MAY_IMPORT: tuple[str, ...] = ("serving", "training")
