"""The stand-in Batch API through the openai client: uploads are checked, batches end as scripted, cancel keeps the
answered part, Azure-style paths work."""

import io
import json

import openai
import pytest

from vital.testing.standin import SampleResponder
from vital.testing.standin_batch import BatchStandInServer


def lines(n, url="/v1/chat/completions"):
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": url,
             "body": {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}]}} for i in range(n)]  # fmt: skip
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def test_upload_create_cancel_and_download():
    with BatchStandInServer(SampleResponder({}, default="yes"), batch_delay_s=60, partial_fraction=0.5) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="purpose must be 'batch'"):
            client.files.create(file=("a.jsonl", io.BytesIO(lines(2))), purpose="fine-tune")
        with pytest.raises(openai.BadRequestError, match="line 1"):
            client.files.create(file=("a.jsonl", io.BytesIO(b'{"custom_id": "x"}\n')), purpose="batch")
        uploaded = client.files.create(file=("a.jsonl", io.BytesIO(lines(4))), purpose="batch")
        assert [f.filename for f in client.files.list(purpose="batch")] == ["a.jsonl"]
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"k": "v"}
        )
        assert client.batches.retrieve(batch.id).status == "in_progress"  # 60 s to go
        cancelled = client.batches.cancel(batch.id)
        assert cancelled.status == "cancelled" and cancelled.request_counts.completed == 2
        output = [json.loads(line) for line in client.files.content(cancelled.output_file_id).content.splitlines()]
        assert [o["custom_id"] for o in output] == ["r0", "r1"]
        assert output[0]["response"]["body"]["choices"][0]["message"]["content"] == "yes"
        assert [b.metadata for b in client.batches.list()] == [{"k": "v"}]
    assert server.batch_stats.submitted == {f"r{i}": 1 for i in range(4)}


def test_azure_paths_and_a_failing_poll():
    with BatchStandInServer(batch_delay_s=0, poll_500=1) as server:
        client = openai.AzureOpenAI(azure_endpoint=server.url, api_version="2024-10-21", api_key="x", max_retries=0)
        uploaded = client.files.create(file=("a.jsonl", io.BytesIO(lines(1, "/chat/completions"))), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/chat/completions", completion_window="24h")
        with pytest.raises(openai.InternalServerError):
            client.batches.retrieve(batch.id)
        assert client.batches.retrieve(batch.id).status == "completed"
    assert set(server.batch_stats.api_versions) == {"2024-10-21"} and server.batch_stats.urls == {
        "/chat/completions": 1
    }
