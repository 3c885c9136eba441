"""Distil to a budget: the most accurate student that meets a speed or size target.

``space`` turns config.yaml's ``search:`` into candidate students; ``feasibility`` measures each
candidate's shape untrained beside the teacher and keeps those that meet the target; ``pick``
chooses the best of the trained candidates on validation; ``report`` writes search.md and its
plot. The rules are ``rules/search.smk``; docs/architecture.md, "The search", draws the stages.
"""
