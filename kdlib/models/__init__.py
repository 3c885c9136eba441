"""Models and their weights: BERT (:mod:`.bert`) and the BiLSTM student (:mod:`.lstm`), written
once against kdlib.backend; numpy state dicts (:mod:`.weights`); kdflow checkpoint folders
(:mod:`.checkpoint`); and pretrained teachers, builtin or HuggingFace folders (:mod:`.pretrained`).
"""
