"""The fault-injection and bad-input suite (FAULT-PLAN.md): harness, history, checker,
scenarios F1 to F15, bad inputs B1 to B12 and the differential test D1."""
