import azure.functions as func
import semantics_recorder


def main(timer: func.TimerRequest) -> None:
    semantics_recorder.record("Startup", past_due=timer.past_due)
