"""Every OIP datatype survives a round trip through an identity model exactly,
in every combination of JSON and binary encodings."""

import pytest

import oip
from edge_values import binary_sample, sample


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers.start(
        [f"identity_{dt.lower()}" for dt in oip.DATATYPES])


def round_trip(server, datatype, request, raws=()):
    model = f"identity_{datatype.lower()}"
    if raws:
        body, headers = oip.binary_body(request, raws)
        response = server.infer(model, body, headers=headers)
    else:
        response = server.infer(model, request)
    assert response.status_code == 200, response.text
    (output,) = oip.decode_response(response)["outputs"]
    assert output["name"] == "OUTPUT0"
    assert output["datatype"] == datatype
    assert output["shape"] == [2, 3]
    return output


@pytest.mark.parametrize("datatype", oip.DATATYPES)
def test_json_in_json_out(server, datatype):
    tensor = sample(datatype)
    request = {"inputs": [oip.json_input("INPUT0", tensor, datatype)]}
    output = round_trip(server, datatype, request)
    assert "data" in output
    assert oip.same_bits(oip.output_array(output), tensor)


@pytest.mark.parametrize("datatype", oip.DATATYPES)
def test_binary_in_binary_out(server, datatype):
    tensor = binary_sample(datatype)
    description, raw = oip.binary_input("INPUT0", tensor, datatype)
    request = {"inputs": [description],
               "parameters": {"binary_data_output": True}}
    output = round_trip(server, datatype, request, [raw])
    assert output["parameters"]["binary_data_size"] == len(raw)
    assert output["raw"] == raw


@pytest.mark.parametrize("datatype", oip.DATATYPES)
def test_binary_in_json_out(server, datatype):
    tensor = sample(datatype)
    description, raw = oip.binary_input("INPUT0", tensor, datatype)
    output = round_trip(server, datatype, {"inputs": [description]}, [raw])
    assert "data" in output
    assert oip.same_bits(oip.output_array(output), tensor)


@pytest.mark.parametrize("datatype", oip.DATATYPES)
def test_json_in_binary_out(server, datatype):
    tensor = sample(datatype)
    request = {"inputs": [oip.json_input("INPUT0", tensor, datatype)],
               "outputs": [{"name": "OUTPUT0",
                            "parameters": {"binary_data": True}}]}
    output = round_trip(server, datatype, request)
    assert output["raw"] == oip.to_raw(tensor, datatype)
