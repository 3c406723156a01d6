"""Searches: policy search (Fast AutoAugment), model search, study naming and warm start."""
