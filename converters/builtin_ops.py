"""The TFLite schema as plain tables: op and tensor type codes to names, and every table's fields.

The enums were generated once from `tensorflow/lite/python/schema_py_generated.py` of TensorFlow
2.21.0 (the pinned version) by a throwaway script that parsed the file's `BuiltinOperator` and
`TensorType` classes; TensorType codes 21 and 22 (float8) come from ai-edge-litert 2.3.0's schema,
which is newer. `TABLES` and `UNIONS` were generated from ai-edge-litert 2.3.0's
`schema_py_generated.py` (tests/test_tflite_file.py reads them back from the installed schema and
prints new ones when they differ). Regenerate when the pinned versions move: new ops, types and
fields get new codes and slots at the end, old ones never change meaning. Kept as literals so
that reading a .tflite file never imports TensorFlow or flatbuffers.
"""

SCHEMA_SOURCE = ("tensorflow/lite/python/schema_py_generated.py of TensorFlow 2.21.0 (enums); "
                 "ai_edge_litert/schema_py_generated.py of ai-edge-litert 2.3.0 (float8, tables)")

# BuiltinOperator: OperatorCode.builtin_code (int32; int8 `deprecated_builtin_code` before
# schema 3a) -> op name as the TFLite docs and converter messages spell it.
BUILTIN_OPERATORS: dict[int, str] = {
    0: "ADD",
    1: "AVERAGE_POOL_2D",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE",
    6: "DEQUANTIZE",
    7: "EMBEDDING_LOOKUP",
    8: "FLOOR",
    9: "FULLY_CONNECTED",
    10: "HASHTABLE_LOOKUP",
    11: "L2_NORMALIZATION",
    12: "L2_POOL_2D",
    13: "LOCAL_RESPONSE_NORMALIZATION",
    14: "LOGISTIC",
    15: "LSH_PROJECTION",
    16: "LSTM",
    17: "MAX_POOL_2D",
    18: "MUL",
    19: "RELU",
    20: "RELU_N1_TO_1",
    21: "RELU6",
    22: "RESHAPE",
    23: "RESIZE_BILINEAR",
    24: "RNN",
    25: "SOFTMAX",
    26: "SPACE_TO_DEPTH",
    27: "SVDF",
    28: "TANH",
    29: "CONCAT_EMBEDDINGS",
    30: "SKIP_GRAM",
    31: "CALL",
    32: "CUSTOM",
    33: "EMBEDDING_LOOKUP_SPARSE",
    34: "PAD",
    35: "UNIDIRECTIONAL_SEQUENCE_RNN",
    36: "GATHER",
    37: "BATCH_TO_SPACE_ND",
    38: "SPACE_TO_BATCH_ND",
    39: "TRANSPOSE",
    40: "MEAN",
    41: "SUB",
    42: "DIV",
    43: "SQUEEZE",
    44: "UNIDIRECTIONAL_SEQUENCE_LSTM",
    45: "STRIDED_SLICE",
    46: "BIDIRECTIONAL_SEQUENCE_RNN",
    47: "EXP",
    48: "TOPK_V2",
    49: "SPLIT",
    50: "LOG_SOFTMAX",
    51: "DELEGATE",
    52: "BIDIRECTIONAL_SEQUENCE_LSTM",
    53: "CAST",
    54: "PRELU",
    55: "MAXIMUM",
    56: "ARG_MAX",
    57: "MINIMUM",
    58: "LESS",
    59: "NEG",
    60: "PADV2",
    61: "GREATER",
    62: "GREATER_EQUAL",
    63: "LESS_EQUAL",
    64: "SELECT",
    65: "SLICE",
    66: "SIN",
    67: "TRANSPOSE_CONV",
    68: "SPARSE_TO_DENSE",
    69: "TILE",
    70: "EXPAND_DIMS",
    71: "EQUAL",
    72: "NOT_EQUAL",
    73: "LOG",
    74: "SUM",
    75: "SQRT",
    76: "RSQRT",
    77: "SHAPE",
    78: "POW",
    79: "ARG_MIN",
    80: "FAKE_QUANT",
    81: "REDUCE_PROD",
    82: "REDUCE_MAX",
    83: "PACK",
    84: "LOGICAL_OR",
    85: "ONE_HOT",
    86: "LOGICAL_AND",
    87: "LOGICAL_NOT",
    88: "UNPACK",
    89: "REDUCE_MIN",
    90: "FLOOR_DIV",
    91: "REDUCE_ANY",
    92: "SQUARE",
    93: "ZEROS_LIKE",
    94: "FILL",
    95: "FLOOR_MOD",
    96: "RANGE",
    97: "RESIZE_NEAREST_NEIGHBOR",
    98: "LEAKY_RELU",
    99: "SQUARED_DIFFERENCE",
    100: "MIRROR_PAD",
    101: "ABS",
    102: "SPLIT_V",
    103: "UNIQUE",
    104: "CEIL",
    105: "REVERSE_V2",
    106: "ADD_N",
    107: "GATHER_ND",
    108: "COS",
    109: "WHERE",
    110: "RANK",
    111: "ELU",
    112: "REVERSE_SEQUENCE",
    113: "MATRIX_DIAG",
    114: "QUANTIZE",
    115: "MATRIX_SET_DIAG",
    116: "ROUND",
    117: "HARD_SWISH",
    118: "IF",
    119: "WHILE",
    120: "NON_MAX_SUPPRESSION_V4",
    121: "NON_MAX_SUPPRESSION_V5",
    122: "SCATTER_ND",
    123: "SELECT_V2",
    124: "DENSIFY",
    125: "SEGMENT_SUM",
    126: "BATCH_MATMUL",
    127: "PLACEHOLDER_FOR_GREATER_OP_CODES",
    128: "CUMSUM",
    129: "CALL_ONCE",
    130: "BROADCAST_TO",
    131: "RFFT2D",
    132: "CONV_3D",
    133: "IMAG",
    134: "REAL",
    135: "COMPLEX_ABS",
    136: "HASHTABLE",
    137: "HASHTABLE_FIND",
    138: "HASHTABLE_IMPORT",
    139: "HASHTABLE_SIZE",
    140: "REDUCE_ALL",
    141: "CONV_3D_TRANSPOSE",
    142: "VAR_HANDLE",
    143: "READ_VARIABLE",
    144: "ASSIGN_VARIABLE",
    145: "BROADCAST_ARGS",
    146: "RANDOM_STANDARD_NORMAL",
    147: "BUCKETIZE",
    148: "RANDOM_UNIFORM",
    149: "MULTINOMIAL",
    150: "GELU",
    151: "DYNAMIC_UPDATE_SLICE",
    152: "RELU_0_TO_1",
    153: "UNSORTED_SEGMENT_PROD",
    154: "UNSORTED_SEGMENT_MAX",
    155: "UNSORTED_SEGMENT_SUM",
    156: "ATAN2",
    157: "UNSORTED_SEGMENT_MIN",
    158: "SIGN",
    159: "BITCAST",
    160: "BITWISE_XOR",
    161: "RIGHT_SHIFT",
    162: "STABLEHLO_LOGISTIC",
    163: "STABLEHLO_ADD",
    164: "STABLEHLO_DIVIDE",
    165: "STABLEHLO_MULTIPLY",
    166: "STABLEHLO_MAXIMUM",
    167: "STABLEHLO_RESHAPE",
    168: "STABLEHLO_CLAMP",
    169: "STABLEHLO_CONCATENATE",
    170: "STABLEHLO_BROADCAST_IN_DIM",
    171: "STABLEHLO_CONVOLUTION",
    172: "STABLEHLO_SLICE",
    173: "STABLEHLO_CUSTOM_CALL",
    174: "STABLEHLO_REDUCE",
    175: "STABLEHLO_ABS",
    176: "STABLEHLO_AND",
    177: "STABLEHLO_COSINE",
    178: "STABLEHLO_EXPONENTIAL",
    179: "STABLEHLO_FLOOR",
    180: "STABLEHLO_LOG",
    181: "STABLEHLO_MINIMUM",
    182: "STABLEHLO_NEGATE",
    183: "STABLEHLO_OR",
    184: "STABLEHLO_POWER",
    185: "STABLEHLO_REMAINDER",
    186: "STABLEHLO_RSQRT",
    187: "STABLEHLO_SELECT",
    188: "STABLEHLO_SUBTRACT",
    189: "STABLEHLO_TANH",
    190: "STABLEHLO_SCATTER",
    191: "STABLEHLO_COMPARE",
    192: "STABLEHLO_CONVERT",
    193: "STABLEHLO_DYNAMIC_SLICE",
    194: "STABLEHLO_DYNAMIC_UPDATE_SLICE",
    195: "STABLEHLO_PAD",
    196: "STABLEHLO_IOTA",
    197: "STABLEHLO_DOT_GENERAL",
    198: "STABLEHLO_REDUCE_WINDOW",
    199: "STABLEHLO_SORT",
    200: "STABLEHLO_WHILE",
    201: "STABLEHLO_GATHER",
    202: "STABLEHLO_TRANSPOSE",
    203: "DILATE",
    204: "STABLEHLO_RNG_BIT_GENERATOR",
    205: "REDUCE_WINDOW",
    206: "STABLEHLO_COMPOSITE",
    207: "STABLEHLO_SHIFT_LEFT",
    208: "STABLEHLO_CBRT",
    209: "STABLEHLO_CASE",
}

# The builtin code that means "look at custom_code" (custom and Flex/TF Select ops).
CUSTOM = 32
# What `deprecated_builtin_code` (an int8) holds for ops whose code does not fit in it.
PLACEHOLDER_FOR_GREATER_OP_CODES = 127

# TensorType: Tensor.type (a byte) -> numpy-style dtype name (the enum name in lower case;
# resource, variant, int4, int2, uint4 and the float8 types have no numpy dtype but keep
# the same spelling).
TENSOR_TYPES: dict[int, str] = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    5: "string",
    6: "bool",
    7: "int16",
    8: "complex64",
    9: "int8",
    10: "float64",
    11: "complex128",
    12: "uint64",
    13: "resource",
    14: "variant",
    15: "uint32",
    16: "uint16",
    17: "int4",
    18: "bfloat16",
    19: "int2",
    20: "uint4",
    21: "float8_e4m3fn",
    22: "float8_e5m2",
}

# Every table of the schema that has fields, for the verifier in tflite_file.py: its fields in slot
# order (slot = 4 + 2 * position), each "name:type", "-" for a deprecated slot. A type is a scalar
# (bool, byte, ubyte, short, ushort, int, uint, long, ulong, float, double), string, a table, a
# union (its type code is the ubyte field just before it), or [one of those] for a vector. Tables
# that are not listed have no fields (most builtin options).
TABLES: dict[str, str] = {
    "AddOptions": "fused_activation_function:byte pot_scale_int16:bool",
    "ArgMaxOptions": "output_type:byte",
    "ArgMinOptions": "output_type:byte",
    "BatchMatMulOptions": "adj_x:bool adj_y:bool asymmetric_quantize_inputs:bool",
    "BidirectionalSequenceLSTMOptions": "fused_activation_function:byte cell_clip:float "
                                        "proj_clip:float merge_outputs:bool time_major:bool "
                                        "asymmetric_quantize_inputs:bool",
    "BidirectionalSequenceRNNOptions": "time_major:bool fused_activation_function:byte "
                                       "merge_outputs:bool asymmetric_quantize_inputs:bool",
    "BlockwiseQuantization": "scales:int zero_points:int block_size:int block_shape:[int]",
    "BucketizeOptions": "boundaries:[float]",
    "Buffer": "data:[ubyte] offset:ulong size:ulong",
    "CallOnceOptions": "init_subgraph_index:int",
    "CallOptions": "subgraph:uint",
    "CastOptions": "in_data_type:byte out_data_type:byte",
    "ConcatEmbeddingsOptions": "num_channels:int num_columns_per_channel:[int] "
                               "embedding_dim_per_channel:[int]",
    "ConcatenationOptions": "axis:int fused_activation_function:byte",
    "Conv2DOptions": "padding:byte stride_w:int stride_h:int fused_activation_function:byte "
                     "dilation_wfactor:int dilation_hfactor:int quantized_bias_type:byte",
    "Conv3DOptions": "padding:byte stride_d:int stride_w:int stride_h:int "
                     "fused_activation_function:byte dilation_dfactor:int dilation_wfactor:int "
                     "dilation_hfactor:int",
    "CumsumOptions": "exclusive:bool reverse:bool",
    "CustomQuantization": "custom:[ubyte]",
    "DepthToSpaceOptions": "block_size:int",
    "DepthwiseConv2DOptions": "padding:byte stride_w:int stride_h:int depth_multiplier:int "
                              "fused_activation_function:byte dilation_wfactor:int "
                              "dilation_hfactor:int",
    "DimensionMetadata": "format:byte dense_size:int array_segments_type:ubyte "
                         "array_segments:SparseIndexVector array_indices_type:ubyte "
                         "array_indices:SparseIndexVector",
    "DivOptions": "fused_activation_function:byte",
    "EmbeddingLookupSparseOptions": "combiner:byte",
    "ExternalBuffer": "id:uint group:uint offset:ulong - packing:string",
    "ExternalBufferGroup": "name:string",
    "FakeQuantOptions": "min:float max:float num_bits:int narrow_range:bool",
    "FullyConnectedOptions": "fused_activation_function:byte weights_format:byte "
                             "keep_num_dims:bool asymmetric_quantize_inputs:bool "
                             "quantized_bias_type:byte quant_spec:[ubyte]",
    "GatherOptions": "axis:int batch_dims:int",
    "GeluOptions": "approximate:bool",
    "HashtableOptions": "table_id:int key_dtype:byte value_dtype:byte",
    "IfOptions": "then_subgraph_index:int else_subgraph_index:int",
    "Int32Vector": "values:[int]",
    "L2NormOptions": "fused_activation_function:byte",
    "LSHProjectionOptions": "type:byte",
    "LSTMOptions": "fused_activation_function:byte cell_clip:float proj_clip:float "
                   "kernel_type:byte asymmetric_quantize_inputs:bool",
    "LeakyReluOptions": "alpha:float",
    "LocalResponseNormalizationOptions": "radius:int bias:float alpha:float beta:float",
    "Metadata": "name:string buffer:uint",
    "MirrorPadOptions": "mode:byte",
    "Model": "version:uint operator_codes:[OperatorCode] subgraphs:[SubGraph] description:string "
             "buffers:[Buffer] metadata_buffer:[int] metadata:[Metadata] "
             "signature_defs:[SignatureDef] external_buffer_groups:[ExternalBufferGroup] "
             "external_buffers:[ExternalBuffer]",
    "MulOptions": "fused_activation_function:byte",
    "MultiAxisQuantization": "scales:int zero_points:int block_size:int quantized_dimensions:[int]",
    "OneHotOptions": "axis:int",
    "Operator": "opcode_index:uint inputs:[int] outputs:[int] builtin_options_type:ubyte "
                "builtin_options:BuiltinOptions custom_options:[ubyte] custom_options_format:byte "
                "mutating_variable_inputs:[bool] intermediates:[int] "
                "large_custom_options_offset:ulong large_custom_options_size:ulong "
                "builtin_options2_type:ubyte builtin_options2:BuiltinOptions2 "
                "debug_metadata_index:int",
    "OperatorCode": "deprecated_builtin_code:byte custom_code:string version:int builtin_code:int",
    "PackOptions": "values_count:int axis:int",
    "Pool2DOptions": "padding:byte stride_w:int stride_h:int filter_width:int filter_height:int "
                     "fused_activation_function:byte",
    "QuantizationParameters": "min:[float] max:[float] scale:[float] zero_point:[long] "
                              "details_type:ubyte details:QuantizationDetails "
                              "quantized_dimension:int",
    "RNNOptions": "fused_activation_function:byte asymmetric_quantize_inputs:bool",
    "RandomOptions": "seed:long seed2:long",
    "ReduceWindowOptions": "reduce_function:int",
    "ReducerOptions": "keep_dims:bool",
    "ReshapeOptions": "new_shape:[int]",
    "ResizeBilinearOptions": "- - align_corners:bool half_pixel_centers:bool",
    "ResizeNearestNeighborOptions": "align_corners:bool half_pixel_centers:bool",
    "ReverseSequenceOptions": "seq_dim:int batch_dim:int",
    "SVDFOptions": "rank:int fused_activation_function:byte asymmetric_quantize_inputs:bool",
    "SequenceRNNOptions": "time_major:bool fused_activation_function:byte "
                          "asymmetric_quantize_inputs:bool",
    "ShapeOptions": "out_type:byte",
    "SignatureDef": "inputs:[TensorMap] outputs:[TensorMap] signature_key:string - "
                    "subgraph_index:uint",
    "SkipGramOptions": "ngram_size:int max_skip_size:int include_all_ngrams:bool",
    "SoftmaxOptions": "beta:float",
    "SpaceToDepthOptions": "block_size:int",
    "SparseToDenseOptions": "validate_indices:bool",
    "SparsityParameters": "traversal_order:[int] block_map:[int] dim_metadata:[DimensionMetadata]",
    "SplitOptions": "num_splits:int",
    "SplitVOptions": "num_splits:int",
    "SqueezeOptions": "squeeze_dims:[int]",
    "StableHLOCompositeOptions": "name:string decomposition_subgraph_index:int "
                                 "composite_attributes:[ubyte] composite_attributes_format:byte "
                                 "version:int",
    "StablehloBroadcastInDimOptions": "broadcast_dimensions:[long]",
    "StablehloCaseOptions": "branch_subgraph_indices:[int]",
    "StablehloCompareOptions": "comparison_direction:uint compare_type:uint",
    "StablehloConcatenateOptions": "dimension:long",
    "StablehloConvolutionOptions": "window_strides:[long] padding:[long] lhs_dilation:[long] "
                                   "rhs_dilation:[long] window_reversal:[bool] "
                                   "input_batch_dimension:long input_feature_dimension:long "
                                   "input_spatial_dimensions:[long] "
                                   "kernel_input_feature_dimension:long "
                                   "kernel_output_feature_dimension:long "
                                   "kernel_spatial_dimensions:[long] output_batch_dimension:long "
                                   "output_feature_dimension:long output_spatial_dimensions:[long] "
                                   "feature_group_count:long batch_group_count:long "
                                   "precision_config:[uint]",
    "StablehloCustomCallOptions": "call_target_name:string has_side_effect:bool "
                                  "backend_config:string api_version:int called_computations:[int] "
                                  "custom_attributes:[ubyte]",
    "StablehloDotGeneralOptions": "lhs_batching_dimensions:[long] rhs_batching_dimensions:[long] "
                                  "lhs_contracting_dimensions:[long] "
                                  "rhs_contracting_dimensions:[long] precision_config:[uint]",
    "StablehloDynamicSliceOptions": "slice_sizes:[long]",
    "StablehloGatherOptions": "offset_dims:[long] collapsed_slice_dims:[long] "
                              "start_index_map:[long] index_vector_dim:long slice_sizes:[long] "
                              "indices_are_sorted:bool",
    "StablehloIotaOptions": "iota_dimension:long",
    "StablehloPadOptions": "edge_padding_low:[long] edge_padding_high:[long] "
                           "interior_padding:[long]",
    "StablehloReduceOptions": "dimensions:[long] body_subgraph_index:int",
    "StablehloReduceWindowOptions": "window_dimensions:[long] window_strides:[long] "
                                    "base_dilations:[long] window_dilations:[long] padding:[long] "
                                    "body_subgraph_index:int",
    "StablehloRngBitGeneratorOptions": "algorithm:byte",
    "StablehloScatterOptions": "indices_are_sorted:bool update_window_dims:[long] "
                               "inserted_window_dims:[long] scatter_dims_to_operand_dims:[long] "
                               "index_vector_dim:long unique_indices:bool "
                               "update_computation_subgraph_index:int",
    "StablehloSliceOptions": "start_indices:[long] limit_indices:[long] strides:[long]",
    "StablehloSortOptions": "dimension:long is_stable:bool comparator_subgraph_index:int",
    "StablehloTransposeOptions": "permutation:[long]",
    "StablehloWhileOptions": "cond_subgraph_index:int body_subgraph_index:int",
    "StridedSliceOptions": "begin_mask:int end_mask:int ellipsis_mask:int new_axis_mask:int "
                           "shrink_axis_mask:int offset:bool",
    "SubGraph": "tensors:[Tensor] inputs:[int] outputs:[int] operators:[Operator] name:string "
                "debug_metadata_index:int",
    "SubOptions": "fused_activation_function:byte pot_scale_int16:bool",
    "Tensor": "shape:[int] type:byte buffer:uint name:string quantization:QuantizationParameters "
              "is_variable:bool sparsity:SparsityParameters shape_signature:[int] has_rank:bool "
              "variant_tensors:[VariantSubType] external_buffer:uint",
    "TensorMap": "name:string tensor_index:uint",
    "TransposeConvOptions": "padding:byte stride_w:int stride_h:int fused_activation_function:byte "
                            "quantized_bias_type:byte",
    "Uint16Vector": "values:[ushort]",
    "Uint8Vector": "values:[ubyte]",
    "UnidirectionalSequenceLSTMOptions": "fused_activation_function:byte cell_clip:float "
                                         "proj_clip:float time_major:bool "
                                         "asymmetric_quantize_inputs:bool "
                                         "diagonal_recurrent_tensors:bool",
    "UniqueOptions": "idx_out_type:byte",
    "UnpackOptions": "num:int axis:int",
    "VarHandleOptions": "container:string shared_name:string",
    "VariantSubType": "shape:[int] type:byte has_rank:bool",
    "WhileOptions": "cond_subgraph_index:int body_subgraph_index:int",
}

# The members of each union in code order: code 1 is the first (0 is NONE).
UNIONS: dict[str, tuple[str, ...]] = {
    "BuiltinOptions": (
        "Conv2DOptions", "DepthwiseConv2DOptions", "ConcatEmbeddingsOptions",
        "LSHProjectionOptions", "Pool2DOptions", "SVDFOptions", "RNNOptions",
        "FullyConnectedOptions", "SoftmaxOptions", "ConcatenationOptions", "AddOptions",
        "L2NormOptions", "LocalResponseNormalizationOptions", "LSTMOptions",
        "ResizeBilinearOptions", "CallOptions", "ReshapeOptions", "SkipGramOptions",
        "SpaceToDepthOptions", "EmbeddingLookupSparseOptions", "MulOptions", "PadOptions",
        "GatherOptions", "BatchToSpaceNDOptions", "SpaceToBatchNDOptions", "TransposeOptions",
        "ReducerOptions", "SubOptions", "DivOptions", "SqueezeOptions", "SequenceRNNOptions",
        "StridedSliceOptions", "ExpOptions", "TopKV2Options", "SplitOptions", "LogSoftmaxOptions",
        "CastOptions", "DequantizeOptions", "MaximumMinimumOptions", "ArgMaxOptions", "LessOptions",
        "NegOptions", "PadV2Options", "GreaterOptions", "GreaterEqualOptions", "LessEqualOptions",
        "SelectOptions", "SliceOptions", "TransposeConvOptions", "SparseToDenseOptions",
        "TileOptions", "ExpandDimsOptions", "EqualOptions", "NotEqualOptions", "ShapeOptions",
        "PowOptions", "ArgMinOptions", "FakeQuantOptions", "PackOptions", "LogicalOrOptions",
        "OneHotOptions", "LogicalAndOptions", "LogicalNotOptions", "UnpackOptions",
        "FloorDivOptions", "SquareOptions", "ZerosLikeOptions", "FillOptions",
        "BidirectionalSequenceLSTMOptions", "BidirectionalSequenceRNNOptions",
        "UnidirectionalSequenceLSTMOptions", "FloorModOptions", "RangeOptions",
        "ResizeNearestNeighborOptions", "LeakyReluOptions", "SquaredDifferenceOptions",
        "MirrorPadOptions", "AbsOptions", "SplitVOptions", "UniqueOptions", "ReverseV2Options",
        "AddNOptions", "GatherNdOptions", "CosOptions", "WhereOptions", "RankOptions",
        "ReverseSequenceOptions", "MatrixDiagOptions", "QuantizeOptions", "MatrixSetDiagOptions",
        "HardSwishOptions", "IfOptions", "WhileOptions", "DepthToSpaceOptions",
        "NonMaxSuppressionV4Options", "NonMaxSuppressionV5Options", "ScatterNdOptions",
        "SelectV2Options", "DensifyOptions", "SegmentSumOptions", "BatchMatMulOptions",
        "CumsumOptions", "CallOnceOptions", "BroadcastToOptions", "Rfft2dOptions", "Conv3DOptions",
        "HashtableOptions", "HashtableFindOptions", "HashtableImportOptions",
        "HashtableSizeOptions", "VarHandleOptions", "ReadVariableOptions", "AssignVariableOptions",
        "RandomOptions", "BucketizeOptions", "GeluOptions", "DynamicUpdateSliceOptions",
        "UnsortedSegmentProdOptions", "UnsortedSegmentMaxOptions", "UnsortedSegmentMinOptions",
        "UnsortedSegmentSumOptions", "ATan2Options", "SignOptions", "BitcastOptions",
        "BitwiseXorOptions", "RightShiftOptions",
    ),
    "BuiltinOptions2": (
        "StablehloConcatenateOptions", "StablehloBroadcastInDimOptions", "StablehloSliceOptions",
        "StablehloConvolutionOptions", "StablehloCustomCallOptions", "StablehloReduceOptions",
        "StablehloScatterOptions", "StablehloCompareOptions", "StablehloDynamicSliceOptions",
        "StablehloPadOptions", "StablehloIotaOptions", "StablehloDotGeneralOptions",
        "StablehloReduceWindowOptions", "StablehloSortOptions", "StablehloWhileOptions",
        "StablehloGatherOptions", "StablehloTransposeOptions", "DilateOptions",
        "StablehloRngBitGeneratorOptions", "ReduceWindowOptions", "StableHLOCompositeOptions",
        "StablehloShiftLeftOptions", "StablehloCaseOptions",
    ),
    "QuantizationDetails": (
        "CustomQuantization", "BlockwiseQuantization", "MultiAxisQuantization",
    ),
    "SparseIndexVector": (
        "Int32Vector", "Uint16Vector", "Uint8Vector",
    ),
}
