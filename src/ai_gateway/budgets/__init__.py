"""Budgets: USD spending caps of keys and teams, reserved before the call and settled after."""
