from lwbatch.cli import console

console()
