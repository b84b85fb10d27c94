"""A Celery round trip through the configured broker and a real worker process (not eager)."""

from mailhost.celery import ping


def test_a_task_travels_through_the_broker_to_a_worker_and_back(celery_worker_process):
    result = ping.delay()
    assert result.get(timeout=60) == "pong"


def _race_writer_and_reader(folder, transport: str, count: int = 200) -> list:
    """A producer putting large messages while a consumer polls the folder; what went wrong."""
    import threading
    import time
    from queue import Empty

    from kombu import Connection

    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "store_processed": False,
               "control_folder": str(folder / "control")}
    body = "x" * (512 * 1024)
    problems, received = [], []
    with Connection("filesystem://", transport=transport, transport_options=options) as producer, \
            Connection("filesystem://", transport=transport, transport_options=options) as consumer:
        put, get = producer.default_channel._put, consumer.default_channel._get

        def produce():
            for n in range(count):
                put("q", {"n": n, "body": body})
                time.sleep(0.002)   # the consumer is then polling when the next file appears

        writer = threading.Thread(target=produce)
        writer.start()
        while len(received) < count and not problems and (writer.is_alive() or any(folder.glob("*.msg"))):
            try:
                message = get("q")
            except Empty:
                continue
            except Exception as error:  # noqa: BLE001 - what the worker would have died of
                problems.append(error)
                break
            if message["body"] != body:
                problems.append(f"message {message['n']} arrived cut short")
            received.append(message["n"])
        writer.join()
    if not problems and sorted(received) != list(range(count)):
        problems.append(f"{count - len(received)} messages never arrived")
    return problems


def test_a_worker_never_reads_a_broker_message_the_producer_is_still_writing(tmp_path):
    """The embedded broker (filesystem://) writes each message under another name and renames
    it into place: kombu's own producer created the file first, a polling worker read it empty
    and died of the JSONDecodeError, leaving queued mail for a restart."""
    from kombu.transport import resolve_transport

    from mailhost.broker import Transport

    assert resolve_transport("filesystem") is Transport, "filesystem:// URLs use mailhost's transport"
    assert _race_writer_and_reader(tmp_path, "filesystem") == []


def test_a_broker_message_that_cannot_be_written_leaves_nothing_for_a_worker_to_choke_on(tmp_path):
    """kombu's own producer left an empty message file behind when serialising failed."""
    from queue import Empty

    import pytest
    from kombu import Connection

    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "store_processed": False,
               "control_folder": str(tmp_path / "control")}
    with Connection("filesystem://", transport_options=options) as connection:
        channel = connection.default_channel
        with pytest.raises(TypeError):
            channel._put("q", {"not json": object()})
        with pytest.raises(Empty):
            channel._get("q")
        channel._put("q", {"n": 1})
        assert channel._get("q") == {"n": 1}
    assert list(tmp_path.glob("*.msg*")) == []


def test_an_unreadable_broker_message_is_dropped_with_a_warning_not_the_worker(tmp_path, caplog):
    from queue import Empty

    import pytest
    from kombu import Connection

    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "store_processed": False,
               "control_folder": str(tmp_path / "control")}
    (tmp_path / "1_half-written.q.msg").write_bytes(b'{"n": ')
    with Connection("filesystem://", transport_options=options) as connection:
        channel = connection.default_channel
        with pytest.raises(Empty):
            channel._get("q")
        channel._put("q", {"n": 2})
        assert channel._get("q") == {"n": 2}
    assert "dropped an unreadable broker message" in caplog.text
