

3d0c8f5e-00014
2
rootstorage-consumer
3d0c8f5e-00012storage