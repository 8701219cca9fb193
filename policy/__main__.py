"""The policy pack: `pulumi preview --policy-pack policy` (constructing PolicyPack starts the
policy server, so tests import policy.rules, never this file)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the pack runs from policy/: make `policy` importable

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.rules import POLICIES, STACK_POLICIES

PolicyPack(name="mlops", enforcement_level=EnforcementLevel.MANDATORY, policies=[*POLICIES, *STACK_POLICIES])
