import azure.functions as func
import semantics_recorder


def main(msg: func.QueueMessage) -> None:
    semantics_recorder.record("AlwaysFails", body=msg.get_body().decode(), dequeue_count=msg.dequeue_count)
    raise RuntimeError("this handler always fails")
