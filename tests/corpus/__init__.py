"""Lightning code written the ways its users write it, none of it knowing nnlab: the corpus
that tests/test_corpus.py runs through nnlab-train, stops mid-epoch, resumes, evaluates and
loads. Each file is one common style; the data are synthetic and small."""
