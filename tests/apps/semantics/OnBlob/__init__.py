import azure.functions as func
import semantics_recorder


def main(blob: func.InputStream) -> None:
    semantics_recorder.record("OnBlob", name=blob.name, data=blob.read().decode(), length=blob.length)
