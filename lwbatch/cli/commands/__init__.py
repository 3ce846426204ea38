"""One module per command of `lwbatch`; lwbatch/cli/app.py gathers them."""
