"""symgrad.nn: the Keras-style API.

- :mod:`~symgrad.nn.layers`: ``Dense``, ``Activation``, ``Input``, ``Flatten``, ``Reshape``;
- :mod:`~symgrad.nn.merge`: ``Add``, ``Concatenate``, ... (merging layers);
- :mod:`~symgrad.nn.models`: ``Model``, ``Sequential``, saving and loading;
- :mod:`~symgrad.nn.functional`: ``Model(inputs, outputs)``, symbolic tensors;
- :mod:`~symgrad.nn.outputs`: a loss and metrics per output;
- :mod:`~symgrad.nn.trainer`: ``compile``, ``fit``, ``evaluate``, ``predict``, the step;
- :mod:`~symgrad.nn.optimizers`, :mod:`~symgrad.nn.losses`, :mod:`~symgrad.nn.metrics`,
  :mod:`~symgrad.nn.initializers`, :mod:`~symgrad.nn.callbacks`;
- :mod:`~symgrad.nn.validation`: checks of user data and arguments.

The public names are ``symgrad.layers``, ``symgrad.models``, ``symgrad.optimizers``, ...
"""
