import azure.functions as func
import semantics_recorder


def main(msg: func.QueueMessage) -> None:
    semantics_recorder.record("Sleepy", body=msg.get_body().decode())
    semantics_recorder.release.wait(60)
