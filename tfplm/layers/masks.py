"""Attention masks: boolean, broadcastable to [batch, query_length, key_length].

True means the query may attend to the key.
"""

from keras import ops


def padding_attention_mask(padding_mask):
    """Lets every query attend to the non-padding keys.

    Args:
        padding_mask: [batch, key_length], 1 (or True) for real tokens.

    Returns:
        bool [batch, 1, key_length].

    Example:
    >>> ops.convert_to_numpy(padding_attention_mask([[1, 1, 0]])).tolist()
    [[[True, True, False]]]
    """
    return ops.cast(padding_mask, "bool")[:, None, :]


def causal_attention_mask(query_length, key_length, query_offset=0):
    """Lets query i (at absolute position `query_offset + i`) attend to keys <= it.

    Returns:
        bool [1, query_length, key_length], broadcastable over the batch.

    Example:
    >>> ops.convert_to_numpy(causal_attention_mask(2, 3, query_offset=1)).astype(int).tolist()
    [[[1, 1, 0], [1, 1, 1]]]
    """
    query_positions = ops.arange(query_length) + query_offset
    key_positions = ops.arange(key_length)
    return (key_positions[None, :] <= query_positions[:, None])[None, :, :]
