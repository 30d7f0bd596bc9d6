"""Build assets/trackers/*.task from the models inside the mediapipe 0.10.21 wheel.

Why: the MediaPipe releases with wheels for every Python we support (1.x, the Tasks API)
bundle no models and fetch them at run time, which a stage cannot rely on. The 0.10.21
wheel carries the models the project tracked with until then (Apache-2.0), so we
repackage those very models as Tasks bundles (uncompressed zips) and the features stay
what adaptors were trained on:
- face: BlazeFace short range + the attention face mesh. The Tasks graph reads one
  landmark tensor of 478 x 3 and a presence score, so five ops appended to the mesh
  model merge its six landmark outputs the way 0.10.21's `LandmarksRefinementCalculator`
  did: lips and eyes replace the mesh's x and y, the irises are added with z = the mean
  z of their eye's contour.
- pose: the detector and the full landmark model; hands: the palm detector and the
  landmark model, lite and full. The pose landmark model, the palm detectors and the hand
  landmark models get metadata (in place of any they had) saying their input is RGB in
  [0, 1], as 0.10.21's graphs fed them: the Tasks graphs need it to prepare the picture.
The refinement index lists below are MediaPipe's (Apache-2.0), from
mediapipe/modules/face_landmark/tensors_to_face_landmarks_with_attention.pbtxt.

    pip download --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 mediapipe==0.10.21 -d /tmp/mp
    python scripts/build_tracker_models.py /tmp/mp/mediapipe-0.10.21-*.whl [assets/trackers]

Needs mediapipe >= 1.2 (its TFLite and metadata flatbuffer schemas) and flatbuffers.
"""
from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import flatbuffers
import numpy as np
from mediapipe.tasks.metadata import metadata_schema_py_generated as md
from mediapipe.tasks.metadata import schema_py_generated as tfl

MODULES = "mediapipe/modules/"
METADATA = "TFLITE_METADATA"
OUT = Path(__file__).resolve().parents[1] / "assets" / "trackers"

MESH = 468
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
        78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415,
        76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306, 184, 74, 73, 72, 11, 302, 303, 304, 408,
        62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292, 183, 42, 41, 38, 12, 268, 271, 272, 407)
LEFT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
            130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
            226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
            35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245,
            156, 70, 63, 105, 66, 107, 55, 193)
RIGHT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
             359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
             446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
             265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
             383, 300, 293, 334, 296, 336, 285, 417)
LEFT_IRIS, RIGHT_IRIS = tuple(range(468, 473)), tuple(range(473, 478))
CONTOUR = 16    # each eye list starts with its contour (lower 9, upper 7): the irises' z is their mean z
# The attention mesh's landmark outputs, in its output order: (landmark indices, values per landmark).
PARTS = ((tuple(range(MESH)), 3), (LIPS, 2), (LEFT_EYE, 2), (RIGHT_EYE, 2), (LEFT_IRIS, 2), (RIGHT_IRIS, 2))

CONCATENATION, FULLY_CONNECTED, RESHAPE, GATHER = (tfl.BuiltinOperator.CONCATENATION,
                                                    tfl.BuiltinOperator.FULLY_CONNECTED,
                                                    tfl.BuiltinOperator.RESHAPE, tfl.BuiltinOperator.GATHER)


def refinement_tables() -> tuple[np.ndarray, np.ndarray]:
    """(gather indices (478 * 3,), iris-z weights (2, n)) over the concatenated outputs plus the two iris z.

    Worked example: landmark 61 (a lip corner) takes x and y from the lips output's first
    point (values 1404, 1405 of the concatenation) and keeps the mesh's z (61 * 3 + 2).
    """
    n = sum(len(indices) * width for indices, width in PARTS)
    source = np.full((MESH + 10, 3), -1, np.int32)
    offset = 0
    for indices, width in PARTS:
        for i, landmark in enumerate(indices):
            source[landmark, :width] = offset + i * width + np.arange(width)
        offset += len(indices) * width
    weights = np.zeros((2, n), np.float32)
    for row, (eye, iris) in enumerate(((LEFT_EYE, LEFT_IRIS), (RIGHT_EYE, RIGHT_IRIS))):
        weights[row, [3 * m + 2 for m in eye[:CONTOUR]]] = 1.0 / CONTOUR
        source[list(iris), 2] = n + row
    assert (source >= 0).all()
    return source.reshape(-1), weights


def _aligned_pack(self, builder):
    """BufferT.Pack with the data 16-byte aligned, so TFLite maps constants without copying them."""
    data = None
    if self.data is not None:
        raw = np.asarray(self.data, np.uint8).tobytes()
        builder.StartVector(1, len(raw), 16)
        builder.head -= len(raw)
        builder.Bytes[builder.head:builder.head + len(raw)] = raw
        data = builder.EndVector()
    tfl.BufferStart(builder)
    if data is not None:
        tfl.BufferAddData(builder, data)
    tfl.BufferAddOffset(builder, self.offset)
    tfl.BufferAddSize(builder, self.size)
    return tfl.BufferEnd(builder)


tfl.BufferT.Pack = _aligned_pack


def _pack(model: tfl.ModelT) -> bytes:
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def _unpack(data: bytes) -> tfl.ModelT:
    return tfl.ModelT.InitFromObj(tfl.Model.GetRootAsModel(data, 0))


def _opcode(model: tfl.ModelT, code: int) -> int:
    for i, op in enumerate(model.operatorCodes):
        if max(op.builtinCode, op.deprecatedBuiltinCode) == code and not op.customCode:
            return i
    op = tfl.OperatorCodeT()
    op.builtinCode, op.deprecatedBuiltinCode, op.version = code, min(code, 127), 1
    model.operatorCodes.append(op)
    return len(model.operatorCodes) - 1


def _tensor(model: tfl.ModelT, name: str, shape: list[int], dtype: int, data: np.ndarray | None = None) -> int:
    tensor = tfl.TensorT()
    tensor.name, tensor.shape, tensor.type, tensor.buffer = name, shape, dtype, 0
    if data is not None:
        buffer = tfl.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        model.buffers.append(buffer)
        tensor.buffer = len(model.buffers) - 1
    graph = model.subgraphs[0]
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _op(model: tfl.ModelT, code: int, inputs: list[int], outputs: list[int], options_type: int = 0,
        options=None) -> None:
    op = tfl.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = _opcode(model, code), inputs, outputs
    op.builtinOptionsType, op.builtinOptions = options_type, options
    model.subgraphs[0].operators.append(op)


def refined_face_mesh(attention_mesh: bytes) -> bytes:
    """The attention mesh with outputs [478 x 3 refined landmarks, face presence] (see the module doc)."""
    model = _unpack(attention_mesh)
    graph = model.subgraphs[0]
    parts, presence = graph.outputs[:len(PARTS)], graph.outputs[len(PARTS)]
    gather_indices, iris_weights = refinement_tables()
    n = iris_weights.shape[1]
    f32, i32 = tfl.TensorType.FLOAT32, tfl.TensorType.INT32

    concat = tfl.ConcatenationOptionsT()
    concat.axis = 3
    stacked = _tensor(model, "refine/stacked", [1, 1, 1, n], f32)
    _op(model, CONCATENATION, list(parts), [stacked], tfl.BuiltinOptions.ConcatenationOptions, concat)
    reshape = tfl.ReshapeOptionsT()
    reshape.newShape = [1, n]
    flat = _tensor(model, "refine/flat", [1, n], f32)
    _op(model, RESHAPE, [stacked, _tensor(model, "refine/flat_shape", [2], i32, np.array([1, n], np.int32))],
        [flat], tfl.BuiltinOptions.ReshapeOptions, reshape)
    iris_z = _tensor(model, "refine/iris_z", [1, 2], f32)
    _op(model, FULLY_CONNECTED, [flat, _tensor(model, "refine/iris_z_weights", [2, n], f32, iris_weights), -1],
        [iris_z], tfl.BuiltinOptions.FullyConnectedOptions, tfl.FullyConnectedOptionsT())
    concat = tfl.ConcatenationOptionsT()
    concat.axis = 1
    pool = _tensor(model, "refine/pool", [1, n + 2], f32)
    _op(model, CONCATENATION, [flat, iris_z], [pool], tfl.BuiltinOptions.ConcatenationOptions, concat)
    gather = tfl.GatherOptionsT()
    gather.axis = 1
    landmarks = _tensor(model, "refine/landmarks", [1, len(gather_indices)], f32)
    _op(model, GATHER, [pool, _tensor(model, "refine/indices", [len(gather_indices)], i32, gather_indices)],
        [landmarks], tfl.BuiltinOptions.GatherOptions, gather)
    graph.outputs = [landmarks, presence]
    return _pack(model)


def with_input_normalisation(model_bytes: bytes, mean: float, std: float, name: str) -> bytes:
    """The model with (only) the TFLite metadata saying its RGB input is (pixel - mean) / std."""
    norm = md.NormalizationOptionsT()
    norm.mean, norm.std = [mean], [std]
    unit = md.ProcessUnitT()
    unit.optionsType, unit.options = md.ProcessUnitOptions.NormalizationOptions, norm
    image = md.TensorMetadataT()
    image.name, image.processUnits = "image", [unit]
    image.content = md.ContentT()
    image.content.contentPropertiesType = md.ContentProperties.ImageProperties
    image.content.contentProperties = md.ImagePropertiesT()
    image.content.contentProperties.colorSpace = md.ColorSpaceType.RGB
    subgraph = md.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    metadata = md.ModelMetadataT()
    metadata.name, metadata.minParserVersion, metadata.subgraphMetadata = name, "1.0.0", [subgraph]
    builder = flatbuffers.Builder(0)
    builder.Finish(metadata.Pack(builder), b"M001")

    model = _unpack(model_bytes)
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(bytes(builder.Output()), np.uint8)
    model.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name, entry.buffer = METADATA, len(model.buffers) - 1
    model.metadata = [m for m in model.metadata or [] if m.name.decode() != METADATA] + [entry]
    return _pack(model)


def write_bundle(path: Path, members: dict[str, bytes]) -> None:
    """A Tasks model bundle: an uncompressed zip (MediaPipe maps the members in place)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="mediapipe-0.10.21-*.whl")
    parser.add_argument("out", type=Path, nargs="?", default=OUT)
    args = parser.parse_args()
    with zipfile.ZipFile(args.wheel) as wheel:
        def read(name: str) -> bytes:
            return wheel.read(MODULES + name)

        args.out.mkdir(parents=True, exist_ok=True)
        write_bundle(args.out / "face_landmarker.task", {
            "face_detector.tflite": read("face_detection/face_detection_short_range.tflite"),
            "face_landmarks_detector.tflite": refined_face_mesh(
                read("face_landmark/face_landmark_with_attention.tflite")),
        })
        write_bundle(args.out / "pose_landmarker.task", {
            "pose_detector.tflite": read("pose_detection/pose_detection.tflite"),
            "pose_landmarks_detector.tflite": with_input_normalisation(
                read("pose_landmark/pose_landmark_full.tflite"), 0.0, 255.0, "Pose landmarks (full)"),
        })
        for size in ("lite", "full"):
            write_bundle(args.out / f"hand_landmarker_{size}.task", {
                "hand_detector.tflite": with_input_normalisation(
                    read(f"palm_detection/palm_detection_{size}.tflite"), 0.0, 255.0, f"Palm detection ({size})"),
                "hand_landmarks_detector.tflite": with_input_normalisation(
                    read(f"hand_landmark/hand_landmark_{size}.tflite"), 0.0, 255.0, f"Hand landmarks ({size})"),
            })
        (args.out / "LICENSE").write_bytes(wheel.read("mediapipe-0.10.21.dist-info/LICENSE"))
    for path in sorted(args.out.glob("*.task")):
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
