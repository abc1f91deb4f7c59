"""lm-evaluation-harness's winogrande functions, for tally's per-choice-context items."""


def doc_to_text(doc):  # the answer's index: lm-eval then reads the choices as contexts
    return doc["answer"]


def doc_to_choice(doc):
    return doc["contexts"]


def doc_to_target(doc):
    return doc["choices"][0]
