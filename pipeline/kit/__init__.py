"""Material for the demo and the tests, made offline (nothing a run depends on).

    synth.py      synthetic videos with known cuts
    badinputs.py  the corpus of broken and unusual inputs with their expected outcomes
    tiny/         tiny random models of the real architectures (`vidprep demo-models`)
"""
