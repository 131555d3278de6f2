"""Science modules shared by studies: Mask-LRP head statistics (`heads`), Jain & Wallace's attention tests
(`attention_tests`) and the model-randomisation check (`randomisation`)."""
