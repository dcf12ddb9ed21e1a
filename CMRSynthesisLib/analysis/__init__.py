"""Quantitative analysis: T1 fitting, ECV, AHA segments."""
