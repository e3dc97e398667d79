"""Condition monitoring (issue 15): vibration analysis as a maintenance engineer reads it, Qt-free.

`spectra` holds the signal processing (velocity RMS, order and envelope spectra), `iso` the ISO
10816/20816 zones, `bearings` the defect frequencies and a small bearing catalogue, `diagnosis`
the rule-based fault call with its evidence, `machines` the machine descriptions in the SQLite
store, and `report` the maintenance-round report.
"""
