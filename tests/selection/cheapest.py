"""A strategy kept outside the package, as a user's would be: every input to the cheapest member.

It exists to show that a strategy is one module and one YAML file (`conf/strategy/cheapest.yaml`
beside it, found through `hydra.searchpath`): no file of ecopipe names it.
"""

from __future__ import annotations

from ecopipe.selection.strategies.base import Goal, Policy, Strategy
from ecopipe.selection.strategies.member import MemberAlone


class Cheapest(Strategy):
    name = "cheapest"

    def fit(self, goal: Goal, arm: str) -> Policy:
        return MemberAlone(0)  # members come cheapest first
