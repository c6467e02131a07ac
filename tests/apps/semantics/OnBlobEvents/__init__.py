import azure.functions as func
import semantics_recorder


def main(blob: func.InputStream) -> None:
    data = blob.read().decode()
    semantics_recorder.record("OnBlobEvents", name=blob.name, data=data, length=blob.length)
    if data == "fail":
        raise RuntimeError("this blob always fails")
