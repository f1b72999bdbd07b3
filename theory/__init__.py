"""Pure arithmetic: GPU specs, op costs, the roofline and whole-model costs. Imports no torch."""
