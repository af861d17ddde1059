"""Fault plans: the YAML format (``model``), their expansion into a timeline (``schedule``)."""

from runcoord.harness.faultplan.model import FaultPlan, load_plan, plan_path
from runcoord.harness.faultplan.schedule import Action, expand

__all__ = ["Action", "FaultPlan", "expand", "load_plan", "plan_path"]
