"""Science modules shared by studies: Mask-LRP head statistics (`heads`) and Jain & Wallace's attention tests
(`attention_tests`)."""
