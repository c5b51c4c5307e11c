"""Jobs the warm run launcher's tests launch (importable by module, as a code location's are)."""

import time

import dagster as dg


@dg.op
def say_hello(context: dg.OpExecutionContext) -> str:
    context.log.info("hello from a warm run worker")
    return "hello"


@dg.job(executor_def=dg.in_process_executor, tags={"wrk/flow": "launcher-test"})
def quick() -> None:
    say_hello()


@dg.op
def wait_to_be_terminated() -> None:
    # Ends only when the run is terminated (SIGINT -> interrupt); the test fails rather than hang.
    for _ in range(6000):
        time.sleep(0.1)
    raise RuntimeError("was not terminated")


@dg.job(executor_def=dg.in_process_executor)
def slow() -> None:
    wait_to_be_terminated()


@dg.op
def one() -> int:
    return 1


@dg.op
def add_one(value: int) -> int:
    return value + 1


@dg.job(
    executor_def=dg.multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": ["wrk_instance.preload"]}}}
    )
)
def forked_steps() -> None:
    """Steps in processes of their own, from the run worker's own fork server (the release job's shape)."""
    add_one(one())
